"""`pyegress worker`: a LiveKit egress worker speaking livekit-server's psrpc over Redis."""
