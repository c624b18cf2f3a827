"""sdwebui"""
