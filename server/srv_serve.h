/* srv_serve.h: entry point of `loramux serve` (argv after the word "serve"). Returns the
 * process exit code: 0 after a clean shutdown or --help, 1 on a start-up failure, 2 on a
 * configuration error. */
#ifndef SRV_SERVE_H
#define SRV_SERVE_H

int srv_serve_main(int argc, char **argv);

#endif
