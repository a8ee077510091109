"""Take a trained network elsewhere: NIR graphs (``nir.py``)."""
