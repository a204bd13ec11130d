//! The networks: ResNet-50 V1 (and a tiny variant) with a 512-d embedding head.
