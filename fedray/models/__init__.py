"""Models: MONAI U-Nets and the paper's multi-head U-Net."""
