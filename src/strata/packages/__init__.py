"""strata.packages"""
