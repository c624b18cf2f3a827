"""sdwebui/extensions"""
