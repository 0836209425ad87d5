"""Host networking: Open vSwitch (or Linux) bridges, addresses and routes, firewall,
persistence in /etc/network/interfaces, and the switchover of the uplink."""
