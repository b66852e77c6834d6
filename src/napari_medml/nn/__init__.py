"""Networks and losses: the one network registry (segmentation and classification
networks, encoders) and the masked segmentation losses. torch loads with a submodule."""
