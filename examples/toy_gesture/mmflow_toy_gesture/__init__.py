"""Example third-party mmflow plugin: two toy 1-D streams and a demo of what joint attention learns."""
