"""sdwebui/facade"""
