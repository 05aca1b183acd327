"""VQ-GAN tokenizer with the taming-transformers state-dict layout."""
