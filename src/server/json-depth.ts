// Bounds how deeply a JSON text nests before it is parsed: a body of 10,000 "[" parses, but every recursive
// walk after it (schema validation, structuredClone, the adapters) can overflow the stack and answer 500.
// One linear scan over the text, string contents skipped, no allocation.

/** The deepest nesting of arrays/objects in `text`, stopping early once it passes `stopAbove`. */
export function jsonDepth(text: string, stopAbove = Number.POSITIVE_INFINITY): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22 /* " */) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
      depth++;
      if (depth > deepest) {
        deepest = depth;
        if (deepest > stopAbove) return deepest;
      }
    } else if (c === 0x5d /* ] */ || c === 0x7d /* } */) depth--;
  }
  return deepest;
}

/** The message for JSON nested deeper than `max` (the caller names the field: "body", "prompt", ...). */
export function tooDeepMessage(field: string, max: number): string {
  return `${field}: JSON is nested more than ${max} levels deep; send a flatter value (the limit is --max-json-depth)`;
}
