// Translates the lines of a file with transformers.js in Node, from a web export on disk and nothing else:
//   node translate.mjs EXPORT_DIR INPUT.txt OUTPUT.json [fp32|q8]
// One sentence per call: in a batch, transformers.js keeps decoding a finished row until every row ends. Greedy, and
// as long as the model's generation config allows (max_length counts the start token, as in Python): the translation
// pipeline's own default is 256 new tokens.
// Writes {"translations": [...], "seconds": ...} (seconds: the translations only, the model already loaded).
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { env, pipeline } from '@huggingface/transformers';

const [exportDir, input, output, dtype = 'fp32'] = process.argv.slice(2);
env.allowRemoteModels = false;
env.localModelPath = path.dirname(path.resolve(exportDir));
const translator = await pipeline('translation', path.basename(path.resolve(exportDir)), { dtype });
const { max_length } = JSON.parse(readFileSync(path.join(exportDir, 'generation_config.json'), 'utf8'));
const options = { num_beams: 1, max_new_tokens: max_length - 1 };
const lines = readFileSync(input, 'utf8').split('\n');
if (lines.at(-1) === '') lines.pop();
const began = performance.now();
const translations = [];
for (const line of lines) {
  translations.push(line.trim() ? (await translator(line, options))[0].translation_text : '');
}
const seconds = (performance.now() - began) / 1000;
writeFileSync(output, JSON.stringify({ translations, seconds }));
