"""Matching: fingerprints of registered content and their hashes, hash lists, media decoding and perceptual
frame hashes, the lazy view that fetches only the pieces a decoder touches, keywords and the matcher's stages.

Place in the flow (docs/ARCHITECTURE.md): metadata -> **match** -> confirmed match (method, proof, bytes fetched).
"""
