// Reading a multipart/form-data request, for every surface that takes uploads (native /v1, OpenAI edits and
// variations, seed 003's /post_config). Parts are read in order; what differs between surfaces — which file
// fields exist, whether another file field is an error, how a text field enters the body — is an option.
import type { FastifyRequest } from 'fastify';
import { HttpError } from './errors.ts';

export interface UploadedFile {
  field: string;
  bytes: Buffer;
}

export interface MultipartForm {
  /** The text fields, as `addField` put them together. */
  body: Record<string, unknown>;
  /** The files of the known file fields, in the order they came. */
  files: UploadedFile[];
}

export interface MultipartOptions {
  /** The file fields this surface reads. */
  fileFields: readonly string[];
  /** The error for a file in any other field; without it such a file is read and dropped. */
  unknownFile?: (field: string) => HttpError;
  /**
   * Adds one text field to the body and returns the body (the same object or a new one); it may throw an
   * HttpError naming the field. Without it text fields are dropped.
   */
  addField?: (body: Record<string, unknown>, name: string, value: string) => Record<string, unknown>;
}

/** The form of a multipart request, or undefined when the request is not multipart. */
export async function readMultipart(req: FastifyRequest, options: MultipartOptions): Promise<MultipartForm | undefined> {
  if (!req.isMultipart()) return undefined;
  const form: MultipartForm = { body: {}, files: [] };
  try {
    await readParts(req, options, form);
  } catch (e) {
    // Our own refusals and the plugin's limits (413) carry a status; anything else is the parser finding a
    // malformed or cut-short body, which is the client's to fix.
    if (e instanceof HttpError || (e as { statusCode?: number }).statusCode !== undefined) throw e;
    throw new HttpError(400, 'invalid_request', `body: the multipart/form-data body is malformed (${(e as Error).message})`, 'body');
  }
  return form;
}

async function readParts(req: FastifyRequest, options: MultipartOptions, form: MultipartForm): Promise<void> {
  for await (const part of req.parts()) {
    if (part.type === 'file') {
      if (options.fileFields.includes(part.fieldname)) {
        form.files.push({ field: part.fieldname, bytes: await part.toBuffer() });
      } else if (options.unknownFile) {
        // Read the refused file to its end first, so the error is the answer and not a stalled upload.
        await part.toBuffer().catch(() => undefined);
        throw options.unknownFile(part.fieldname);
      } else {
        await part.toBuffer();
      }
    } else if (options.addField) {
      form.body = options.addField(form.body, part.fieldname, String(part.value));
    }
  }
}

/** The last file that came in any of `fields` (a repeated upload replaces the earlier one). */
export function lastFile(form: MultipartForm, ...fields: string[]): Buffer | undefined {
  return form.files.filter((f) => fields.includes(f.field)).at(-1)?.bytes;
}
