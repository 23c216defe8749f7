"""Issue: is a certificate due, keys and CSRs, the ACME order, DNS-01 answered."""
