"""strata.core"""
