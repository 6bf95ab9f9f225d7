"""Testing tools that sit on top of the stages: the differential fuzzer (`superopt.testing.fuzz`).

Like the face, this package is a top layer: it may import the pipeline's stages, the runtime and
the core; nothing in the library imports it.
"""
