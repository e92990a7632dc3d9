"""Faces in photos: detection and alignment (facexlib), the whole-photo restorer, detail blending
and the background upscaler."""
