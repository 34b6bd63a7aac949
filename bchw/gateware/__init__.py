"""Amaranth gateware: the adder-tree accelerator, one engine per layer."""
