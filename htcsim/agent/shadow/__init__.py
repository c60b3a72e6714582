"""Shadow mode: a candidate policy replayed on the live decision log, beside the active one."""
