"""Deploy: plan the remote steps (pure), run them on one host, roll a release out over the fleet, prove it by TLS handshake."""
