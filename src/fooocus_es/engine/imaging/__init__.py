"""Pure image rules of Fooocus's image-to-image half: sizes, masks, outpaint, inpaint area, tiles.

numpy + PIL only (no torch, no diffusers); images are HxWx3 uint8, masks HxW uint8 in {0, 255}.
"""
