/* synth_cli.h: `loramux synth-model` and `loramux synth-adapter`, the command-line front ends of
 * synth_model.h and synth_adapter.h.
 *
 * synth-model writes a random model with the shape of a real one (config.json,
 * model.safetensors, generation_config.json and the tokenizer files of a real tokenizer) that
 * `loramux generate` and `loramux serve` load like any checkpoint; its output is meaningless.
 * synth-adapter writes a random PEFT-style adapter (LoRA, rsLoRA, DoRA, MoRA, LoRMA, LoRA²)
 * for a model directory. Both are deterministic per --seed. They exist for the end-to-end
 * tests and the benchmarks, and for trying the server at a real model's size without its
 * weights.
 *
 * Each entry point takes the arguments after `loramux` (argv[0] is the subcommand name), prints
 * errors to stderr and returns the process exit code: 0 done, 1 failed (I/O, a tokenizer or
 * base model that does not load), 2 bad usage (the message names the argument). Not
 * thread-safe (getopt); call from main() only.
 */
#ifndef SYNTH_CLI_H
#define SYNTH_CLI_H

/* loramux synth-model [options]; see --help. */
int synth_cli_model_main(int argc, char **argv);

/* loramux synth-adapter [options]; see --help. */
int synth_cli_adapter_main(int argc, char **argv);

#endif
