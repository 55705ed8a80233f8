/* test_chat.c: unit tests of server/srv_chat*.c (HuggingFace chat templates).
 *
 * The family templates below are the real `chat_template` strings of public
 * tokenizer_config.json files (source named above each), kept as test data. Every expected
 * string was derived by hand from Jinja semantics under transformers' apply_chat_template
 * settings: trim_blocks (a block tag eats the one \n after it), lstrip_blocks (spaces before a
 * block tag at the start of a line go), `-` strips all whitespace on that side, a single
 * trailing \n of the template is dropped, `{{ }}` never trims, filters bind tighter than `+`.
 * The derivation is written next to each expectation. As a cross-check (not as the source of
 * the expectations) all of them were also rendered with Python jinja2 3.1.6 in an
 * ImmutableSandboxedEnvironment configured like transformers, and agree.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "srv_chat.h"
#include "test_util.h"

/* ---- helpers ---- */

/* The conversation every family renders: system + user + assistant + user. The last user
 * message has a leading space and a trailing newline, so the templates that strip/trim
 * content (Llama 2, Llama 3) are told apart from those that do not. */
static const srv_chat_msg_t k_conv[] = {
    {"system", "You are a helpful assistant."},
    {"user", "Hello!"},
    {"assistant", "Hi there."},
    {"user", " What is 2+2?\n"},
};
#define K_NOSYS (k_conv + 1) /* the same without the system message, 3 messages */

/* user + assistant + user, for the feature tables */
static const srv_chat_msg_t k_short[] = {
    {"user", "Hi"},
    {"assistant", "Yo"},
    {"user", "Bye"},
};

static srv_chat_t *parse_ok(const char *tmpl, const char *bos, const char *eos) {
    srv_chat_t *c = NULL;
    llm_error_t err = {0};
    int rc = srv_chat_from_string(tmpl, bos, eos, &c, &err);
    if (rc) fail_msg("parse failed: %s: %s\ntemplate: %s", llm_err_name(rc), err.msg, tmpl);
    assert_non_null(c);
    return c;
}

static char *render_ok(const srv_chat_t *c, const srv_chat_msg_t *m, int n, int agp) {
    char *out = NULL;
    llm_error_t err = {0};
    int rc = srv_chat_render(c, m, n, agp, &out, &err);
    if (rc) fail_msg("render failed: %s: %s", llm_err_name(rc), err.msg);
    assert_non_null(out);
    return out;
}

static void expect_render(const srv_chat_t *c, const srv_chat_msg_t *m, int n, int agp,
                          const char *want) {
    char *got = render_ok(c, m, n, agp);
    assert_string_equal(got, want);
    free(got);
}

/* Renders and expects failure code; err gets the message. */
static void expect_fail(const srv_chat_t *c, const srv_chat_msg_t *m, int n, int code,
                        llm_error_t *err) {
    char *out = (char *)"sentinel";
    int rc = srv_chat_render(c, m, n, 1, &out, err);
    if (rc != code)
        fail_msg("expected %s, got %s: %s", llm_err_name(code), llm_err_name(rc), err->msg);
    assert_null(out);
}

/* Parses tmpl and expects failure code at load. */
static void expect_parse_fail(const char *tmpl, int code, const char *needle) {
    srv_chat_t *c = (srv_chat_t *)&c;
    llm_error_t err = {0};
    int rc = srv_chat_from_string(tmpl, NULL, NULL, &c, &err);
    if (rc != code)
        fail_msg("%s: expected %s, got %s (%s)", tmpl, llm_err_name(code), llm_err_name(rc),
                 err.msg);
    assert_null(c);
    assert_int_equal(err.code, code);
    if (needle && !strstr(err.msg, needle)) fail_msg("\"%s\" lacks \"%s\"", err.msg, needle);
}

/* A family: its template, tokens, the rendering without the generation prompt, and what
 * add_generation_prompt=true appends to it. */
typedef struct family_s {
    const char *tmpl, *bos, *eos;
    const srv_chat_msg_t *msgs;
    int n;
    const char *want, *gen;
} family_t;

static void check_rendering(const srv_chat_t *c, const family_t *f) {
    for (int agp = 0; agp <= 1; agp++) {
        size_t len = strlen(f->want) + strlen(f->gen) + 1;
        char *want = malloc(len);
        assert_non_null(want);
        snprintf(want, len, "%s%s", f->want, agp ? f->gen : "");
        expect_render(c, f->msgs, f->n, agp, want);
        free(want);
    }
}

static void check_family(const family_t *f) {
    srv_chat_t *c = parse_ok(f->tmpl, f->bos, f->eos);
    check_rendering(c, f);
    srv_chat_free(c);
}

static const char *tmp_write(const char *dir, const char *name, const char *text) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(tu_write_file(path, text, strlen(text)), 0);
    return path;
}

/* ---- family templates (test data) ---- */

/* meta-llama/Llama-2-7b-chat-hf (identical in -13b-chat-hf). Note the JSON file's
 * '<<SYS>>\\n': the template holds backslash-n, which the Jinja string literal turns into \n. */
static const char k_llama2[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] "
    "== 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != "
    "false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
    "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif "
    "message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% "
    "endfor %}";

/* meta-llama/Meta-Llama-3-8B-Instruct. The '\n\n' are real newlines inside the Jinja
 * string literal; `message['content'] | trim` trims the content only (filters bind first). */
static const char k_llama3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n"
    "\n"
    "'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = "
    "bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n"
    "\n"
    "' }}{% endif %}";

/* meta-llama/Llama-3.1-8B-Instruct (tools, builtin_tools, date_string; as quoted in
 * huggingface.js packages/jinja/test/e2e.test.js). */
static const char k_llama31[] =
    "{{- bos_token }}\n{%- if custom_tools is defined %}\n    {%- set tools = custom_tools %}\n{%- "
    "endif %}\n{%- if not tools_in_user_message is defined %}\n    {%- set tools_in_user_message = "
    "true %}\n{%- endif %}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 "
    "Jul 2024\" %}\n{%- endif %}\n{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- "
    "endif %}\n\n{#- This block extracts the system message, so we can slot it into the right "
    "place. #}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = "
    "messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- else %}\n    {%- "
    "set system_message = \"\" %}\n{%- endif %}\n\n{#- System message + builtin tools #}\n{{- "
    "\"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{%- if builtin_tools is defined or "
    "tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}\n{%- if "
    "builtin_tools is defined %}\n    {{- \"Tools: \" + builtin_tools | reject('equalto', "
    "'code_interpreter') | join(\", \") + \"\\n\\n\"}}\n{%- endif %}\n{{- \"Cutting Knowledge "
    "Date: December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{%- if tools "
    "is not none and not tools_in_user_message %}\n    {{- \"You have access to the following "
    "functions. To call a function, please respond with JSON for a function call.\" }}\n    {{- "
    "'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name "
    "and its value}.' }}\n    {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n  "
    "      {{- t | tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n{%- endif "
    "%}\n{{- system_message }}\n{{- \"<|eot_id|>\" }}\n\n{#- Custom tools are passed in a user "
    "message with some extra guidance #}\n{%- if tools_in_user_message and not tools is none %}\n  "
    "  {#- Extract the first user message so we can plug it in here #}\n    {%- if messages | "
    "length != 0 %}\n        {%- set first_user_message = messages[0]['content']|trim %}\n        "
    "{%- set messages = messages[1:] %}\n    {%- else %}\n        {{- raise_exception(\"Cannot put "
    "tools in the first user message when there's no first user message!\") }}\n{%- endif %}\n    "
    "{{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}\n    {{- \"Given the following "
    "functions, please respond with a JSON for a function call \" }}\n    {{- \"with its proper "
    "arguments that best answers the given prompt.\\n\\n\" }}\n    {{- 'Respond in the format "
    "{\"name\": function name, \"parameters\": dictionary of argument name and its value}.' }}\n   "
    " {{- \"Do not use variables.\\n\\n\" }}\n    {%- for t in tools %}\n        {{- t | "
    "tojson(indent=4) }}\n        {{- \"\\n\\n\" }}\n    {%- endfor %}\n    {{- first_user_message "
    "+ \"<|eot_id|>\"}}\n{%- endif %}\n\n{%- for message in messages %}\n    {%- if not "
    "(message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}\n        "
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' }}\n    {%- elif 'tool_calls' in message %}\n        {%- if not "
    "message.tool_calls|length == 1 %}\n            {{- raise_exception(\"This model only supports "
    "single tool-calls at once!\") }}\n        {%- endif %}\n        {%- set tool_call = "
    "message.tool_calls[0].function %}\n        {%- if builtin_tools is defined and tool_call.name "
    "in builtin_tools %}\n            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' "
    "-}}\n            {{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}\n            {%- for "
    "arg_name, arg_val in tool_call.arguments | items %}\n                {{- arg_name + '=\"' + "
    "arg_val + '\"' }}\n                {%- if not loop.last %}\n                    {{- \", \" "
    "}}\n                {%- endif %}\n                {%- endfor %}\n            {{- \")\" }}\n   "
    "     {%- else  %}\n            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' "
    "-}}\n            {{- '{\"name\": \"' + tool_call.name + '\", ' }}\n            {{- "
    "'\"parameters\": ' }}\n            {{- tool_call.arguments | tojson }}\n            {{- \"}\" "
    "}}\n        {%- endif %}\n        {%- if builtin_tools is defined %}\n            {#- This "
    "means we're in ipython mode #}\n            {{- \"<|eom_id|>\" }}\n        {%- else %}\n      "
    "      {{- \"<|eot_id|>\" }}\n        {%- endif %}\n    {%- elif message.role == \"tool\" or "
    "message.role == \"ipython\" %}\n        {{- "
    "\"<|start_header_id|>ipython<|end_header_id|>\\n\\n\" }}\n        {%- if message.content is "
    "mapping or message.content is iterable %}\n            {{- message.content | tojson }}\n      "
    "  {%- else %}\n            {{- message.content }}\n        {%- endif %}\n        {{- "
    "\"<|eot_id|>\" }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n";

/* Qwen/Qwen2-7B-Instruct (also Qwen1.5): ChatML with a default system message. */
static const char k_qwen2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n"
    "' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n"
    "' + message['content'] + '<|im_end|>' + '\n"
    "'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n"
    "' }}{% endif %}";

/* Qwen/Qwen2.5-7B-Instruct (tool branch unused; `message.role` attribute syntax). */
static const char k_qwen25[] =
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == "
    "'system' %}\n        {{- messages[0]['content'] }}\n    {%- else %}\n        {{- 'You are "
    "Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n    {{- "
    "\"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user "
    "query.\\n\\nYou are provided with function signatures within <tools></tools> XML "
    "tags:\\n<tools>\" }}\n    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool "
    "| tojson }}\n    {%- endfor %}\n    {{- \"\\n</tools>\\n\\nFor each function call, return a "
    "json object with function name and arguments within <tool_call></tool_call> XML "
    "tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n    {%- if "
    "messages[0]['role'] == 'system' %}\n        {{- '<|im_start|>system\\n' + "
    "messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n        {{- "
    "'<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n "
    "   {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' + "
    "message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n    {%- elif message.role "
    "== \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n        {%- if "
    "message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n        "
    "{%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined "
    "%}\n                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n     "
    "       {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n           "
    " {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n            "
    "{{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n    {%- "
    "elif message.role == \"tool\" %}\n        {%- if (loop.index0 == 0) or (messages[loop.index0 "
    "- 1].role != \"tool\") %}\n            {{- '<|im_start|>user' }}\n        {%- endif %}\n      "
    "  {{- '\\n<tool_response>\\n' }}\n        {{- message.content }}\n        {{- "
    "'\\n</tool_response>' }}\n        {%- if loop.last or (messages[loop.index0 + 1].role != "
    "\"tool\") %}\n            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- "
    "endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif "
    "%}\n";

/* mistralai/Mistral-7B-Instruct-v0.1 (as in TheBloke/Mistral-7B-Instruct-v0.1-GPTQ). */
static const char k_mistral01[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 "
    "% 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] "
    "' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
    "message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}";

/* mistralai/Mistral-7B-Instruct-v0.2, later revision with an optional system message
 * (the "v1" Mistral template; also v0.3-era fine-tunes). */
static const char k_mistral02sys[] =
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = "
    "messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- "
    "set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in "
    "loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n       "
    " {{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == "
    "'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' "
    "[INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else "
    "%}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n   "
    " {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + "
    "eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are "
    "supported, with the exception of an initial optional system message!') }}\n    {%- endif "
    "%}\n{%- endfor %}\n";

/* HuggingFaceH4/zephyr-7b-beta; TinyLlama/TinyLlama-1.1B-Chat-v1.0 ships the identical
 * string (its copy in our fixtures has no chat_template, see test_load_no_template). */
static const char k_zephyr[] =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' "
    "+ message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ "
    "'<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and "
    "add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

/* ---- families ---- */

/* Llama 2. messages[0] is system, so loop_messages = messages[1:] and system_message is its
 * text. Loop 0 (user, index0 0, alternation ok): content = '<<SYS>>\n' + sys + '\n<</SYS>>\n\n'
 * + 'Hello!', printed as bos + '[INST] ' + content.strip() + ' [/INST]'. Loop 1 (assistant):
 * ' ' + 'Hi there.' + ' ' + eos. Loop 2 (user): strip() removes the leading space and the
 * newline. No add_generation_prompt branch, so both renderings are equal. */
static void test_llama2(void **state) {
    (void)state;
    family_t f = {k_llama2, "<s>", "</s>", k_conv, 4,
                  "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST]"
                  " Hi there. </s><s>[INST] What is 2+2? [/INST]",
                  ""};
    check_family(&f);
}

/* Llama 3: per message '<|start_header_id|>' + role + '<|end_header_id|>\n\n' +
 * (content | trim) + '<|eot_id|>', bos before the first; the generation prompt is the
 * assistant header. */
#define L3_BODY                                                                              \
    "<|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|>"                          \
    "<|start_header_id|>assistant<|end_header_id|>\n\nHi there.<|eot_id|>"                  \
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
#define L3_GEN "<|start_header_id|>assistant<|end_header_id|>\n\n"

static void test_llama3(void **state) {
    (void)state;
    family_t f = {k_llama3, "<|begin_of_text|>", "<|eot_id|>", k_conv, 4,
                  "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                  "You are a helpful assistant.<|eot_id|>" L3_BODY,
                  L3_GEN};
    check_family(&f);
}

/* Llama 3.1: every tag carries `-`, so no template whitespace survives. custom_tools and
 * builtin_tools are undefined, tools is none (transformers passes tools=None),
 * tools_in_user_message becomes true, date_string "26 Jul 2024". The system message is
 * trimmed and removed from messages; the system header gets the two date lines, then it;
 * no tool block (tools is none); each remaining message as in Llama 3 ('tool_calls' not in
 * message); then the generation prompt. */
static void test_llama31(void **state) {
    (void)state;
    family_t f = {k_llama31, "<|begin_of_text|>", "<|eot_id|>", k_conv, 4,
                  "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                  "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
                  "You are a helpful assistant.<|eot_id|>" L3_BODY,
                  L3_GEN};
    check_family(&f);
    /* without a system message the system header still comes, with an empty message */
    family_t g = {k_llama31, "<|begin_of_text|>", "<|eot_id|>", K_NOSYS, 3,
                  "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                  "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
                  "<|eot_id|>" L3_BODY,
                  L3_GEN};
    check_family(&g);
}

/* ChatML: '<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n' per message, content
 * untouched; generation prompt '<|im_start|>assistant\n'. */
#define CHATML_AFTER_SYS                                                                     \
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi there.<|im_end|>\n"        \
    "<|im_start|>user\n What is 2+2?\n<|im_end|>\n"
#define CHATML                                                                               \
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" CHATML_AFTER_SYS

/* SmolLM-135M-Instruct: the fixture's own tokenizer_config.json (ChatML template,
 * bos <|im_start|>, eos <|im_end|>), loaded with srv_chat_load. */
static void test_smollm_fixture(void **state) {
    (void)state;
    srv_chat_t *c = NULL;
    llm_error_t err = {0};
    int rc = srv_chat_load(tu_fixture_path("smollm-135m-instruct-lora-qv-r16"), &c, &err);
    if (rc) fail_msg("load: %s", err.msg);
    family_t f = {NULL, NULL, NULL, k_conv, 4, CHATML, "<|im_start|>assistant\n"};
    check_rendering(c, &f);
    srv_chat_free(c);
}

/* Qwen2: ChatML, plus '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' on the
 * first iteration when messages[0] is not a system message. */
static void test_qwen2(void **state) {
    (void)state;
    family_t f = {k_qwen2, NULL, "<|im_end|>", k_conv, 4, CHATML, "<|im_start|>assistant\n"};
    check_family(&f);
    family_t g = {k_qwen2, NULL, "<|im_end|>", K_NOSYS, 3,
                  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n" CHATML_AFTER_SYS,
                  "<|im_start|>assistant\n"};
    check_family(&g);
}

/* Qwen2.5: `tools` is none (falsy), so the system header is messages[0] or Qwen's default;
 * in the loop the first system message is skipped (loop.first), the others print ChatML. */
static void test_qwen25(void **state) {
    (void)state;
    family_t f = {k_qwen25, NULL, "<|im_end|>", k_conv, 4, CHATML, "<|im_start|>assistant\n"};
    check_family(&f);
    family_t g = {k_qwen25, NULL, "<|im_end|>", K_NOSYS, 3,
                  "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                  "assistant.<|im_end|>\n" CHATML_AFTER_SYS,
                  "<|im_start|>assistant\n"};
    check_family(&g);
}

/* Mistral v0.1 has no system role (see test_raise_mistral). user + assistant + user:
 * bos, '[INST] ' + content + ' [/INST]' (content untouched: two spaces before "What"),
 * content + eos + ' ', ...; nothing depends on add_generation_prompt. */
static void test_mistral_v01(void **state) {
    (void)state;
    family_t f = {k_mistral01, "<s>", "</s>", K_NOSYS, 3,
                  "<s>[INST] Hello! [/INST]Hi there.</s> [INST]  What is 2+2?\n [/INST]", ""};
    check_family(&f);
}

/* Mistral v0.2 with a system message: every tag has `-`; the first user turn becomes
 * ' [INST] ' + system + '\n\n' + content + ' [/INST]', assistant ' ' + content + eos. */
static void test_mistral_v02_system(void **state) {
    (void)state;
    family_t f = {k_mistral02sys, "<s>", "</s>", k_conv, 4,
                  "<s> [INST] You are a helpful assistant.\n\nHello! [/INST] Hi there.</s>"
                  " [INST]  What is 2+2?\n [/INST]",
                  ""};
    check_family(&f);
}

/* Zephyr / TinyLlama chat: the template is written one tag per line without `-`. trim_blocks
 * removes the \n after each {% %}; the \n after each {{ }} stays. So every message is
 * '<|role|>\n' + content + eos + '\n', and on the last one with add_generation_prompt
 * '<|assistant|>' + '\n'. */
static void test_zephyr_tinyllama(void **state) {
    (void)state;
    family_t f = {k_zephyr, "<s>", "</s>", k_conv, 4,
                  "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello!</s>\n"
                  "<|assistant|>\nHi there.</s>\n<|user|>\n What is 2+2?\n</s>\n",
                  "<|assistant|>\n"};
    check_family(&f);
}

/* Phi-3-mini: the fixture's tokenizer_config.json. '<|role|>\n' + content + '<|end|>\n' per
 * message; then '<|assistant|>\n' with add_generation_prompt, else eos_token, which comes
 * from the file (<|endoftext|>). */
static void test_phi3_fixture(void **state) {
    (void)state;
    srv_chat_t *c = NULL;
    llm_error_t err = {0};
    int rc = srv_chat_load(tu_fixture_path("phi3-mini-tokenizer-json"), &c, &err);
    if (rc) fail_msg("load: %s", err.msg);
#define PHI3_BODY                                                                            \
    "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello!<|end|>\n"              \
    "<|assistant|>\nHi there.<|end|>\n<|user|>\n What is 2+2?\n<|end|>\n"
    expect_render(c, k_conv, 4, 0, PHI3_BODY "<|endoftext|>");
    expect_render(c, k_conv, 4, 1, PHI3_BODY "<|assistant|>\n");
    srv_chat_free(c);
}

/* ---- raise_exception ---- */

#define ALTERNATE "Conversation roles must alternate user/assistant/user/assistant/..."

static void test_raise_llama2(void **state) {
    (void)state;
    static const srv_chat_msg_t two_users[] = {{"user", "a"}, {"user", "b"}};
    srv_chat_t *c = parse_ok(k_llama2, "<s>", "</s>");
    llm_error_t err = {0};
    /* loop index0 1: (role == 'user') is true, (1 % 2 == 0) is false -> raise */
    expect_fail(c, two_users, 2, LLM_EINVAL, &err);
    assert_string_equal(err.msg, ALTERNATE);
    assert_int_equal(err.code, LLM_EINVAL);
    srv_chat_free(c);
}

static void test_raise_mistral(void **state) {
    (void)state;
    static const srv_chat_msg_t tool[] = {{"user", "a"}, {"tool", "b"}};
    llm_error_t err = {0};
    srv_chat_t *c = parse_ok(k_mistral01, "<s>", "</s>");
    /* v0.1 with a system message: index0 0 is not 'user' -> alternation error */
    expect_fail(c, k_conv, 4, LLM_EINVAL, &err);
    assert_string_equal(err.msg, ALTERNATE);
    /* a 'tool' message at index0 1 passes the alternation test and hits the else branch */
    expect_fail(c, tool, 2, LLM_EINVAL, &err);
    assert_string_equal(err.msg, "Only user and assistant roles are supported!");
    srv_chat_free(c);
    /* v0.2: system then assistant -> the first loop message is not 'user' */
    static const srv_chat_msg_t sys_asst[] = {{"system", "s"}, {"assistant", "a"}};
    c = parse_ok(k_mistral02sys, "<s>", "</s>");
    expect_fail(c, sys_asst, 2, LLM_EINVAL, &err);
    assert_string_equal(err.msg, "After the optional system message, conversation roles must "
                                 "alternate user/assistant/user/assistant/...");
    srv_chat_free(c);
}

/* ---- loading ---- */

static void test_load_no_template(void **state) {
    (void)state;
    srv_chat_t *c = (srv_chat_t *)&c;
    llm_error_t err = {0};
    /* the TinyLlama fixture's tokenizer_config.json has no chat_template */
    assert_int_equal(srv_chat_load(tu_fixture_path("tinyllama-tokenizer-json"), &c, &err),
                     LLM_ENOTFOUND);
    assert_null(c);
    assert_non_null(strstr(err.msg, "no chat template"));
    char *dir = tu_mkdtemp();
    assert_non_null(dir);
    c = (srv_chat_t *)&c;
    assert_int_equal(srv_chat_load(dir, &c, &err), LLM_ENOTFOUND);
    assert_null(c);
    tu_rm_rf(dir);
    free(dir);
}

static srv_chat_t *load_dir_ok(const char *dir) {
    srv_chat_t *c = NULL;
    llm_error_t err = {0};
    int rc = srv_chat_load(dir, &c, &err);
    if (rc) fail_msg("load %s: %s: %s", dir, llm_err_name(rc), err.msg);
    return c;
}

static void test_load_variants(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    assert_non_null(dir);
    srv_chat_t *c;

    /* named templates: "default" is used; tokens as {"content": ...} objects */
    tmp_write(dir, "tokenizer_config.json",
              "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"},"
              " {\"name\": \"default\", \"template\": \"D{{ bos_token }}{{ eos_token }}\"}],"
              " \"bos_token\": {\"content\": \"<B>\", \"lstrip\": false}, \"eos_token\": \"<E>\","
              " \"pad_token\": null}");
    c = load_dir_ok(dir);
    expect_render(c, k_short, 3, 1, "D<B><E>");
    srv_chat_free(c);

    /* special_tokens_map.json wins over tokenizer_config.json; extra tokens are a list */
    tmp_write(dir, "special_tokens_map.json",
              "{\"bos_token\": {\"content\": \"<b2>\"}, \"unk_token\": \"<u>\","
              " \"additional_special_tokens\": [\"<x>\", {\"content\": \"<y>\"}]}");
    tmp_write(dir, "tokenizer_config.json",
              "{\"chat_template\": \"{{ bos_token }}{{ eos_token }}{{ unk_token }}"
              "{{ pad_token is defined }}{{ additional_special_tokens|join(',') }}\","
              " \"bos_token\": \"<b1>\", \"eos_token\": \"<e1>\"}");
    c = load_dir_ok(dir);
    expect_render(c, k_short, 3, 0, "<b2><e1><u>False<x>,<y>");
    srv_chat_free(c);

    /* chat_template.jinja takes priority (as in transformers); its trailing \n is dropped */
    tmp_write(dir, "chat_template.jinja", "J{{ eos_token }}\n");
    c = load_dir_ok(dir);
    expect_render(c, k_short, 3, 0, "J<e1>");
    srv_chat_free(c);

    /* no template in tokenizer_config.json and no .jinja: chat_template.json */
    char path[4096];
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    remove(path);
    tmp_write(dir, "tokenizer_config.json", "{\"eos_token\": \"<e>\"}");
    tmp_write(dir, "chat_template.json", "{\"chat_template\": \"P{{ messages|length }}\"}");
    c = load_dir_ok(dir);
    expect_render(c, k_short, 3, 0, "P3");
    srv_chat_free(c);

    tu_rm_rf(dir);
    free(dir);
}

static void test_load_errors(void **state) {
    (void)state;
    char *dir = tu_mkdtemp();
    assert_non_null(dir);
    srv_chat_t *c = (srv_chat_t *)&c;
    llm_error_t err = {0};

    tmp_write(dir, "tokenizer_config.json", "{\"chat_template\": ");
    assert_int_equal(srv_chat_load(dir, &c, &err), LLM_EFORMAT);
    assert_null(c);
    assert_non_null(strstr(err.msg, "tokenizer_config.json"));

    /* a template that does not parse: the message names the file and the line */
    tmp_write(dir, "tokenizer_config.json",
              "{\"chat_template\": \"line 1\\n{% for m in messages %}\\n{{ m.content }}\"}");
    assert_int_equal(srv_chat_load(dir, &c, &err), LLM_EFORMAT);
    assert_null(c);
    assert_non_null(strstr(err.msg, "tokenizer_config.json: chat template:"));
    assert_non_null(strstr(err.msg, "endfor"));
    assert_non_null(strstr(err.msg, "line 2"));

    tmp_write(dir, "tokenizer_config.json",
              "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"x\"}]}");
    assert_int_equal(srv_chat_load(dir, &c, &err), LLM_ENOTFOUND);
    assert_null(c);

    tu_rm_rf(dir);
    free(dir);
}

/* ---- parse errors and unsupported constructs ---- */

static void test_parse_errors(void **state) {
    (void)state;
    expect_parse_fail("{% if messages %}never closed", LLM_EFORMAT, "expected 'endif'");
    expect_parse_fail("a\nb\n{{ 1 + }}", LLM_EFORMAT, "line 3");
    expect_parse_fail("{{ messages | no_such_filter }}", LLM_EFORMAT, "no filter named 'no_such_f");
    expect_parse_fail("{{ x is no_such_test }}", LLM_EFORMAT, "no test named");
    expect_parse_fail("{% endif %}", LLM_EFORMAT, "unexpected tag 'endif'");
    expect_parse_fail("{% frobnicate %}", LLM_EFORMAT, "unknown tag 'frobnicate'");
    expect_parse_fail("{{ 'unterminated }}", LLM_EFORMAT, "unterminated string");
    expect_parse_fail("{# open comment", LLM_EFORMAT, "comment");
    expect_parse_fail("{{ (1 }}", LLM_EFORMAT, NULL);
    expect_parse_fail("{% break %}", LLM_EFORMAT, "outside of a for loop");
    llm_error_t err = {0};
    srv_chat_t *c = (srv_chat_t *)&c;
    assert_int_equal(srv_chat_from_string(NULL, NULL, NULL, &c, &err), LLM_EINVAL);
    assert_null(c);
}

static void test_unsupported(void **state) {
    (void)state;
    /* constructs this interpreter lacks fail at load, with the construct named */
    expect_parse_fail("{% macro m(x) %}{{ x }}{% endmacro %}{{ m(1) }}", LLM_EUNSUPPORTED,
                      "unsupported tag 'macro' at line 1");
    expect_parse_fail("{% include 'other.jinja' %}", LLM_EUNSUPPORTED, "'include'");
    expect_parse_fail("{% for m in messages recursive %}{% endfor %}", LLM_EUNSUPPORTED,
                      "recursive");

    /* Jinja filters not implemented here fail only when reached, so a template whose
     * untaken (e.g. tool-calling) branch uses one still renders */
    srv_chat_t *c = parse_ok("{% if tools %}{{ tools|sort }}{% endif %}ok", NULL, NULL);
    expect_render(c, k_short, 3, 0, "ok");
    srv_chat_free(c);
    llm_error_t err = {0};
    c = parse_ok("\n{{ messages|sort }}", NULL, NULL);
    expect_fail(c, k_short, 3, LLM_EINVAL, &err);
    assert_string_equal(err.msg, "chat template: unsupported filter 'sort' at line 2");
    srv_chat_free(c);
    /* Jinja, too, only rejects an unknown filter inside an if when it runs */
    c = parse_ok("{% if messages[9] is defined %}{{ x|no_such_filter }}{% endif %}ok", NULL, NULL);
    expect_render(c, k_short, 3, 0, "ok");
    srv_chat_free(c);
    c = parse_ok("{{ 'a\\0b' }}", NULL, NULL); /* the result is a C string */
    expect_fail(c, k_short, 3, LLM_EINVAL, &err);
    assert_non_null(strstr(err.msg, "NUL"));
    srv_chat_free(c);
    c = parse_ok("{{ 1.5 }}", NULL, NULL);
    expect_fail(c, k_short, 3, LLM_EINVAL, &err);
    assert_non_null(strstr(err.msg, "unsupported float"));
    srv_chat_free(c);
    c = parse_ok("{{ 'x'.format(1) }}", NULL, NULL);
    expect_fail(c, k_short, 3, LLM_EINVAL, &err);
    assert_non_null(strstr(err.msg, "unsupported string method 'format'"));
    srv_chat_free(c);
}

/* ---- feature tables (rendered with k_short, bos <s>, eos </s>) ---- */

typedef struct case_s {
    const char *tmpl, *want;
} case_t;

static const case_t k_loops[] = {
    /* loop.index/index0/length/first/last/revindex */
    {"{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.length }}{{ loop.first "
     "}}{{ loop.last }}{{ loop.revindex }},{% endfor %}",
     "103TrueFalse3,213FalseFalse2,323FalseTrue1,"},
    /* the `if` filter runs before the loop, so loop.length counts kept items */
    {"{% for m in messages if m.role == 'user' %}{{ loop.index }}/{{ loop.length }}={{ "
     "m.content }} {% else %}none{% endfor %}",
     "1/2=Hi 2/2=Bye "},
    /* for-else runs when nothing was iterated */
    {"{% for m in [] %}x{% else %}empty{% endfor %}", "empty"},
    /* continue on odd i, break at 8 */
    {"{% for i in range(10) %}{% if i is odd %}{% continue %}{% endif %}{% if i > 6 %}{% "
     "break %}{% endif %}{{ i }}{% endfor %}",
     "0246"},
    /* tuple targets over dict.items() */
    {"{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}", "a=1;b=2;"},
    /* previtem/nextitem; `x if c` without else is undefined -> "" */
    {"{% for m in messages %}{{ loop.previtem.role if not loop.first }}>{{ "
     "loop.nextitem.content if not loop.last }}|{% endfor %}",
     ">Yo|user>Bye|assistant>|"},
    /* namespace attributes survive the loop's scopes */
    {"{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% "
     "set ns.s = ns.s ~ m.role[0] %}{% endfor %}{{ ns.n }}{{ ns.s }}",
     "3uau"},
    /* a plain set inside a loop does not leak out (Jinja scoping) */
    {"{% set x = 'outer' %}{% for m in messages %}{% set x = m.role %}{% endfor %}{{ x }}",
     "outer"},
    /* tuple assignment */
    {"{% set a, b = 'p', 'q' %}{{ b }}{{ a }}", "qp"},
    /* block set captures rendered text */
    {"{% set blk %}[{{ messages|length }}]{% endset %}{{ blk ~ blk }}", "[3][3]"},
    /* undefined: prints "", is falsy, `default` replaces it; an index past the end too */
    {"[{{ nope }}]{{ nope is defined }}{{ nope is undefined }}{% if not nope %}F{% endif %}{{ "
     "nope|default('d') }}{{ messages[9] is defined }}",
     "[]FalseTrueFdFalse"},
};

static const case_t k_exprs[] = {
    /* string escapes: \t, \x41 and \u00e9 are decoded; ~ concatenates */
    {"{{ 'a\\tb' ~ \"it's\" ~ '\\x41\\u00e9' }}", "a\tbit'sA\303\251"},
    /* Python integer semantics: floor division and modulo round toward -inf */
    {"{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 5 }} {{ 1 + 2 * 3 }} {{ 'ab' * 2 }} {{ "
     "[1] + [2] }}",
     "3 -4 2 32 7 abab [1, 2]"},
    /* comparisons, `in` on str/list/dict, 1 == true */
    {"{{ 1 < 2 }}{{ 'b' > 'a' }}{{ 2 != 2 }}{{ 'ell' in 'hello' }}{{ 'user' not in ['user'] "
     "}}{{ 'role' in messages[0] }}{{ 1 == true }}",
     "TrueTrueFalseTrueFalseTrueTrue"},
    /* and/or return an operand; not returns a bool */
    {"{{ none or 'x' }}|{{ 'a' and 'b' }}|{{ 0 and 1 }}|{{ not 0 }}", "x|b|0|True"},
    /* conditional expressions */
    {"{{ 'y' if messages else 'n' }}{{ 'z' if false }}|", "y|"},
    /* subscripts, negative indices, slices (strings by code point) */
    {"{{ messages[0]['role'] }}{{ messages[-1].content }}{{ messages[1:]|length }}{{ "
     "messages[::-1][0].content }}{{ 'h\303\251llo'[1:3] }}{{ 'abc'[-1] }}",
     "userBye2Bye\303\251lc"},
    /* filters: trim, upper, lower, Jinja's title, capitalize, map/join, selectattr, first... */
    {"{{ '  x  '|trim }}|{{ 'Ab'|upper }}{{ 'Ab'|lower }}|{{ 'hello world'|title }}|{{ "
     "'hELLO'|capitalize }}|{{ messages|map(attribute='role')|join(',') }}|{{ "
     "messages|selectattr('role', 'equalto', 'user')|list|length }}|{{ ['a', 'b']|first }}{{ "
     "['a', 'b']|last }}|{{ 'a-b'|replace('-', '+') }}|{{ '5'|int + 1 }}",
     "x|ABab|Hello World|Hello|user,assistant,user|2|ab|a+b|6"},
    /* str methods, dict.get */
    {"{{ '  x  '.strip() }}|{{ 'xyx'.strip('x') }}|{{ 'abc'.startswith('ab') }}{{ "
     "'abc'.endswith('bc') }}|{{ 'a,b'.split(',') }}|{{ 'Hi'.upper() }}|{{ "
     "messages[0].get('role') }}{{ messages[0].get('x', '-') }}",
     "x|y|TrueTrue|['a', 'b']|HI|user-"},
    /* tojson is json.dumps(ensure_ascii=False): ", " and ": " separators, é kept */
    {"{{ messages[0]|tojson }}|{{ {'k': [1, none, true, '\303\251\"']}|tojson }}|{{ "
     "[1]|tojson(indent=2) }}",
     "{\"role\": \"user\", \"content\": \"Hi\"}|{\"k\": [1, null, true, \"\303\251\\\"\"]}|[\n"
     "  1\n"
     "]"},
    /* printing non-strings uses Python's str(): None, True, list/dict/tuple repr */
    {"{{ none }} {{ true }} {{ [1, 'a'] }} {{ {'a': none} }} {{ (1,) }}",
     "None True [1, 'a'] {'a': None} (1,)"},
    /* tests */
    {"{{ 'a' is string }}{{ 1 is number }}{{ none is none }}{{ {} is mapping }}{{ 4 is even "
     "}}{{ 9 is divisibleby 3 }}{{ messages is iterable }}",
     "TrueTrueTrueTrueTrueTrueTrue"},
    /* raw blocks are not parsed */
    {"{% raw %}{{ not parsed }}{% endraw %}", "{{ not parsed }}"},
    /* comments vanish */
    {"a{# note #}b", "ab"},
    /* globals transformers provides: strftime_now, raise_exception, tools=None, documents=None */
    {"{{ strftime_now is defined }}{{ raise_exception is defined }}{{ tools is none }}{{ "
     "documents is none }}",
     "TrueTrueTrueTrue"},
    /* trim strips Unicode whitespace (NBSP, ideographic space) like Python's str.strip() */
    {"{{ ' \302\240x\343\200\200'|trim }}", "x"},
    /* transformers' {% generation %} tag renders its body */
    {"{% generation %}G{% endgeneration %}", "G"},
    /* Unicode case mapping (ß -> SS, final sigma), Markup from |e escapes what is added to it,
     * Python-style ':' before %} */
    {"{{ 'h\303\251llo'|upper }}|{{ '\316\237\316\224\316\237\316\243'|lower }}|{{ "
     "'stra\303\237e'.upper() }}|{{ '<' + ('<b>'|e) }}{% if true: %}|{% endif %}",
     "H\303\211LLO|\316\277\316\264\316\277\317\202|STRASSE|&lt;&lt;b&gt;|"},
    /* range() */
    {"{{ range(3)|list }}", "[0, 1, 2]"},
};

static const case_t k_ws[] = {
    /* `-` on both sides of each tag removes all the spaces around them */
    {"a  {%- if true -%}  b  {%- endif -%}  c", "abc"},
    /* trim_blocks: each %} eats the \n after it; the \n after x is text */
    {"{% if true %}\nx\n{% endif %}\ny", "x\ny"},
    /* lstrip_blocks removes the two spaces at the line start; `{%+` keeps the four */
    {"  {% if true %}x{% endif %}\n    {%+ if true %}y{% endif %}", "x    y"},
    /* variable tags never trim: both \n and the leading spaces stay */
    {"{{ 'a' }}\nb\n  {{ 'c' }}", "a\nb\n  c"},
    /* `{{-` strips " \n " before, `-}}` strips " \n " after */
    {"x \n {{- 'a' -}} \n y", "xay"},
    /* one trailing \n of the template is dropped (keep_trailing_newline=False) */
    {"a\n", "a"},
    /* ... only one */
    {"a\n\n", "a\n"},
    /* lstrip does not apply ("a " is not blank), `#}` eats the \n */
    {"a {# c #}\nb", "a b"},
    /* \r\n is normalized to \n first, then trim_blocks eats the one after %} */
    {"{% if true %}\r\nx\r\n{% endif %}", "x\n"},
    /* `+%}` disables trim_blocks for that tag */
    {"{% if true +%}\nx{% endif %}", "\nx"},
    /* a comment alone on a line disappears with its indentation and newline */
    {"line\n   {# c #}\nnext", "line\nnext"},
    /* one tag per line: the {% %} lines vanish, the \n after {{ }} stays */
    {"{% for m in messages %}\n{{ m.role }}\n{% endfor %}", "user\nassistant\nuser\n"},
};

static void run_cases(const case_t *cases, size_t n) {
    for (size_t i = 0; i < n; i++) {
        srv_chat_t *c = parse_ok(cases[i].tmpl, "<s>", "</s>");
        char *got = render_ok(c, k_short, 3, 0);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("case %zu\ntemplate: %s\nwant: [%s]\ngot:  [%s]", i, cases[i].tmpl,
                     cases[i].want, got);
        free(got);
        srv_chat_free(c);
    }
}

static void test_loops_and_scopes(void **state) {
    (void)state;
    run_cases(k_loops, sizeof k_loops / sizeof k_loops[0]);
}

static void test_expressions(void **state) {
    (void)state;
    run_cases(k_exprs, sizeof k_exprs / sizeof k_exprs[0]);
}

static void test_whitespace_control(void **state) {
    (void)state;
    run_cases(k_ws, sizeof k_ws / sizeof k_ws[0]);
}

/* ---- undefined values and runtime errors ---- */

static void test_undefined(void **state) {
    (void)state;
    static const struct { const char *tmpl, *msg; } cases[] = {
        /* printing, testing and defaulting an undefined name is fine (k_loops); using it in
         * an operation is an error, as in Jinja */
        {"{{ nope + 'a' }}", "chat template: 'nope' is undefined at line 1"},
        {"{{ nope.attr }}", "chat template: 'nope' is undefined at line 1"},
        {"{{ messages[0].nokey.x }}",
         "chat template: 'dict object' has no attribute 'nokey' at line 1"},
        {"{{ 'a' + 1 }}",
         "chat template: unsupported operand types for +: 'str' and 'int' at line 1"},
        {"{{ 1 < 'a' }}",
         "chat template: '<' not supported between instances of 'int' and 'str' at line 1"},
        /* map/select/... are generators in Jinja; printing one shows an address there */
        {"{{ messages|map(attribute='role') }}",
         "chat template: cannot print a generator (add |list) at line 1"},
        {"{% for x in 3 %}{% endfor %}", "chat template: 'int' object is not iterable at line 1"},
        {"{{ nope() }}", "chat template: 'nope' is undefined at line 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        srv_chat_t *c = parse_ok(cases[i].tmpl, NULL, NULL);
        llm_error_t err = {0};
        expect_fail(c, k_short, 3, LLM_EINVAL, &err);
        assert_string_equal(err.msg, cases[i].msg);
        srv_chat_free(c);
    }
}

/* ---- limits ---- */

static void test_limits(void **state) {
    (void)state;
    llm_error_t err = {0};
    srv_chat_limits_t lim = {.max_output = 1000};
    /* 100 x 16 bytes of text = 1600 bytes of output */
    srv_chat_t *c = parse_ok("{% for i in range(100) %}0123456789abcdef{% endfor %}", NULL, NULL);
    srv_chat_set_limits(c, &lim);
    expect_fail(c, k_short, 3, LLM_ERANGE, &err);
    assert_non_null(strstr(err.msg, "output longer than 1000 bytes"));
    lim.max_output = 1600;
    srv_chat_set_limits(c, &lim);
    char *out = render_ok(c, k_short, 3, 0);
    assert_int_equal(strlen(out), 1600);
    free(out);
    srv_chat_free(c);

    /* a string doubled 40 times hits the default 8 MiB string limit after 23 doublings */
    c = parse_ok("{% set ns = namespace(s='x') %}{% for i in range(40) %}"
                 "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}", NULL, NULL);
    expect_fail(c, k_short, 3, LLM_ERANGE, &err);
    assert_non_null(strstr(err.msg, "string longer than 8388608 bytes"));
    srv_chat_free(c);

    /* range() is counted before its list is built */
    c = parse_ok("{% for i in range(1000000000) %}{% endfor %}", NULL, NULL);
    expect_fail(c, k_short, 3, LLM_ERANGE, &err);
    assert_non_null(strstr(err.msg, "loop steps"));
    srv_chat_free(c);

    /* steps are loop iterations plus range() items: 200 + 200 + 200 * (200 + 200) = 80400 */
    c = parse_ok("{% for i in range(200) %}{% for j in range(200) %}{% endfor %}{% endfor %}x",
                 NULL, NULL);
    lim = (srv_chat_limits_t){.max_steps = 10000};
    srv_chat_set_limits(c, &lim);
    expect_fail(c, k_short, 3, LLM_ERANGE, &err);
    assert_non_null(strstr(err.msg, "more than 10000 loop steps"));
    lim.max_steps = 80400;
    srv_chat_set_limits(c, &lim);
    expect_render(c, k_short, 3, 0, "x");
    srv_chat_free(c);

    /* scratch memory: 1000 strings of 200 bytes against 64 KiB */
    c = parse_ok("{% for i in range(1000) %}{% set x = messages[0].content * 100 %}{% endfor %}",
                 NULL, NULL);
    lim = (srv_chat_limits_t){.max_memory = 64 << 10};
    srv_chat_set_limits(c, &lim);
    expect_fail(c, k_short, 3, LLM_ERANGE, &err);
    assert_non_null(strstr(err.msg, "memory limit"));
    srv_chat_free(c);
}

/* ---- arguments, content none, concurrency ---- */

typedef struct thread_arg_s {
    const srv_chat_t *c;
    const char *want;
    int ok;
} thread_arg_t;

static void *render_loop(void *p) {
    thread_arg_t *a = p;
    a->ok = 1;
    for (int i = 0; i < 50 && a->ok; i++) {
        char *out = NULL;
        llm_error_t err = {0};
        if (srv_chat_render(a->c, k_conv, 4, 1, &out, &err) != 0 || strcmp(out, a->want) != 0)
            a->ok = 0;
        free(out);
    }
    return NULL;
}

static void test_concurrent_render(void **state) {
    (void)state;
    srv_chat_t *c = parse_ok(k_llama31, "<|begin_of_text|>", "<|eot_id|>");
    char *want = render_ok(c, k_conv, 4, 1);
    pthread_t th[4];
    thread_arg_t args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg_t){c, want, 0};
        assert_int_equal(pthread_create(&th[i], NULL, render_loop, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(args[i].ok);
    }
    free(want);
    srv_chat_free(c);
}

static void test_arguments(void **state) {
    (void)state;
    srv_chat_t *c = parse_ok("{% for m in messages %}{{ m.role }}={{ m.content }};{% endfor %}",
                             NULL, NULL);
    /* content NULL is passed as none, which prints as "None" (str(None)) */
    static const srv_chat_msg_t none_content[] = {{"assistant", NULL}};
    expect_render(c, none_content, 1, 0, "assistant=None;");
    expect_render(c, NULL, 0, 1, "");
    char *out = (char *)"x";
    llm_error_t err = {0};
    static const srv_chat_msg_t no_role[] = {{NULL, "x"}};
    assert_int_equal(srv_chat_render(c, no_role, 1, 0, &out, &err), LLM_EINVAL);
    assert_null(out);
    assert_int_equal(srv_chat_render(c, k_short, -1, 0, &out, &err), LLM_EINVAL);
    assert_int_equal(srv_chat_render(NULL, k_short, 3, 0, &out, &err), LLM_EINVAL);
    assert_int_equal(srv_chat_render(c, k_short, 3, 0, NULL, NULL), LLM_EINVAL);
    srv_chat_free(c);
    srv_chat_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_llama31),
        cmocka_unit_test(test_smollm_fixture),
        cmocka_unit_test(test_qwen2),
        cmocka_unit_test(test_qwen25),
        cmocka_unit_test(test_mistral_v01),
        cmocka_unit_test(test_mistral_v02_system),
        cmocka_unit_test(test_zephyr_tinyllama),
        cmocka_unit_test(test_phi3_fixture),
        cmocka_unit_test(test_raise_llama2),
        cmocka_unit_test(test_raise_mistral),
        cmocka_unit_test(test_load_no_template),
        cmocka_unit_test(test_load_variants),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_unsupported),
        cmocka_unit_test(test_loops_and_scopes),
        cmocka_unit_test(test_expressions),
        cmocka_unit_test(test_whitespace_control),
        cmocka_unit_test(test_undefined),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_concurrent_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
