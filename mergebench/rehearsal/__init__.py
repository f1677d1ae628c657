"""The rehearsal: MergeBench's real path (`reproduce --model FAMILY`) run end to end on this machine,
with a real small model (SmolLM2-135M-Instruct) and a stand-in for the one thing that cannot be reached,
the Hugging Face hub (`hub_double`, serving `standins`). `mergebench rehearse` / `make rehearse`."""
