"""mfexp: MosaicFusion experiments."""
