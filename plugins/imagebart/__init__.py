"""ImageBART: multinomial-diffusion hierarchy of encoder–decoder autoregressive transformers."""
