"""Test harness: the Kubernetes API emulator, a cluster stand-in, and tool installers."""
