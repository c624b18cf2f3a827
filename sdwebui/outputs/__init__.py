"""sdwebui/outputs"""
