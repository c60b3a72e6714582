"""Named compatibility profiles: other simulators' conventions, to reproduce published results.

Never the default; each profile says which published table it reproduces.
"""
