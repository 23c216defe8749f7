"""Commands: renew, push, reissue, rollback, import, status, prune.

Each returns a report and never prints; the CLI renders it."""
