"""strata.image"""
