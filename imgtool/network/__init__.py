"""Container networking: a bridge (`imgtool0`), a veth pair and an address per container, NAT
and published ports with nftables, and clean-up of everything that was made.

Netlink goes through pyroute2 (the one module that imports it is `links`), nftables through
the `nft` command with a table of imgtool's own (`ip imgtool`), whose rules carry the
container's id in their comment so that they can be found and removed.
"""
