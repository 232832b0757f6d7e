"""The frozen SigLIP2 text side: the text tower (`siglip2_text`) and caption tokenisation
(`tokenize`). Import the submodules directly."""
