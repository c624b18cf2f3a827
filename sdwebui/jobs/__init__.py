"""sdwebui/jobs"""
