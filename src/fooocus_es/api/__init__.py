"""HTTP controllers; structs.py is the wire contract."""
