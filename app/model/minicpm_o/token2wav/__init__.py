"""MiniCPM-o 4.5's token2wav, our port: speech codes (25 a second) to 24 kHz audio.

The checkpoint ships it under `assets/token2wav/`: a flow-matching model (`flow.yaml`,
`flow.pt`: a conformer encoder that upsamples codes to 50 mel frames a second, and a DiT
solved by an ODE), a HiFT vocoder (`hift.pt`), and two ONNX encoders for the voice prompt
(`campplus.onnx`, the speaker embedding; `speech_tokenizer_v2_25hz.onnx`, the prompt's
codes). No usable library runs it for us (the reference package pins old transformers and
onnxruntime and hard-codes CUDA), so it is written here on torch and checked against the
reference's outputs on the same tiny weights.
"""
