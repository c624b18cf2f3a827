"""sdwebui/config"""
