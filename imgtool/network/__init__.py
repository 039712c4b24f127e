"""Container networking: a bridge (`imgtool0`), a veth pair and an address per container, NAT
and published ports with nftables, and clean-up of everything that was made.

Netlink is spoken by `netlink` (a raw NETLINK_ROUTE socket; named namespaces as `ip netns`
keeps them); nftables goes through the `nft` command with a table of imgtool's own
(`ip imgtool`), whose rules carry the container's id in their comment so that they can be
found and removed.
"""
