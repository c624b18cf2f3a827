"""The engine and the A1111-compatible extension API.

Public for extensions (A1111 names): scripts, script_callbacks, shared, processing, images, paths.
Everything else is internal and may change.
"""
