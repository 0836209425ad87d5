"""The host system: files, sysctl, packages and APT, services, libvirt configuration."""
