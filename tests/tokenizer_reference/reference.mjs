// Reference ids for the tokenizer conformance tests: transformers.js's AutoTokenizer on a local
// folder. Usage: node reference.mjs <cache> <tokenizer folder> <output.json> <text files...>
// Text files are read as bytes and decoded the WHATWG way (invalid bytes -> U+FFFD, BOM kept);
// the output is keyed by file name.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, isAbsolute, join } from 'node:path';

const [cache, folder, output, ...files] = process.argv.slice(2);
if (!isAbsolute(folder)) throw new Error('the tokenizer folder must be an absolute path');
const require = createRequire(join(cache, 'package.json'));
const { AutoTokenizer, env } = await import(require.resolve('@huggingface/transformers'));
env.allowRemoteModels = false;
env.localModelPath = '/';
const tokenizer = await AutoTokenizer.from_pretrained(folder);

const decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
const result = {};
for (const file of files) {
  const text = decoder.decode(readFileSync(file));
  const ids = tokenizer.encode(text, { add_special_tokens: false });
  const with_special = tokenizer.encode(text, { add_special_tokens: true });
  const decoded = ids.length
    ? tokenizer.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false })
    : '';
  result[basename(file)] = {
    ids,
    decoded,
    with_special_length: with_special.length,
    with_special_head: with_special.slice(0, 4),
    with_special_tail: with_special.slice(-4),
  };
}
writeFileSync(output, JSON.stringify(result));
