"""strata.sysroot"""
