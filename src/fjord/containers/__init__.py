"""Containers: Debian images (mmdebstrap, cached), root filesystems (overlay or copy),
customisation written from the host, and libvirt LXC domains."""
