"""Commands: renew, push, reissue, rollback, import, status, prune. Each returns a report; the CLI renders it."""
