"""Models: timm backbones, MLP heads, and the time/context model."""
