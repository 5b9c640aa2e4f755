"""Detection: MMDetection Mask R-CNN trained and evaluated under Lightning (the ``train`` and ``evaluate`` stages)."""
