"""Deploy: plan the remote work (pure), run it on one host, roll a release out over the
fleet on one fan-out, prove it by TLS handshakes."""
