"""Capacity planning: the smallest fleet whose replay meets a wait target.

``fleet`` searches fleet sizes (replaying in parallel processes), ``plot``
draws the answer and ``defaults`` holds the settings the command line shows.
It drives the simulator, as ``htcsim.tune`` does, and never imports it back.
"""
