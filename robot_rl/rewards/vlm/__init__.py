"""Vision-language rewards: a CLIP/SigLIP-style dual encoder built here (:mod:`.model`, :mod:`.tokenizer`), the
zero-shot reward (:mod:`.zero_shot`), fine-tuning into a success classifier (:mod:`.finetune`) and checkpoint
conversion (:mod:`.convert`). Plain torch: no package beyond the base install is needed; the ``vlm`` extra only
matters for converting third-party checkpoints (see :mod:`.convert`)."""
