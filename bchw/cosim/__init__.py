"""Co-simulation of the generated ``bchw_top``: a cocotb bench and its runner.

:func:`bchw.cosim.runner.run` builds the Verilog in Icarus Verilog or
Verilator, streams images through :mod:`bchw.cosim.bench` and compares every
result and every output cycle with the golden and cycle models.
"""
