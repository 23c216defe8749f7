"""Helpers shared by the unit and lab tests (not tests themselves)."""
