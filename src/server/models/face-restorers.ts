// Face restoration's weight files in the models folder: the restorers (CodeFormer, GFPGAN) and the two helper
// networks every restore needs (RetinaFace detector, ParseNet parser). Kiln's folders are codeformer/, gfpgan/ and
// facedetect/; A1111's Codeformer/ and GFPGAN/ are read too (A1111 downloads the facexlib helpers next to the
// restorer, so helpers are found in any of these folders). Files are told apart by name, as A1111 names them.
import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { extname, join, relative } from 'node:path';
import { SpecError, type RestoreFacesSpec } from '../../queue/job-spec.ts';

export type FaceRestorerName = RestoreFacesSpec['model'];
export const FACE_RESTORERS: readonly FaceRestorerName[] = ['CodeFormer', 'GFPGAN'];

/** The folders searched, Kiln's first. */
const FOLDERS = ['codeformer', 'Codeformer', 'gfpgan', 'GFPGAN', 'facedetect'];

type Role = 'CodeFormer' | 'GFPGAN' | 'detector' | 'parser';
/** Which file plays which part, by its lower-cased name, and what to install where when none does. */
const ROLES: Record<Role, { match: RegExp; folder: string; hint: string }> = {
  CodeFormer: { match: /codeformer/, folder: 'codeformer', hint: 'the CodeFormer weights (codeformer-v0.1.0.pth) in models/codeformer/' },
  GFPGAN: { match: /gfpgan/, folder: 'gfpgan', hint: 'the GFPGAN weights (GFPGANv1.4.pth) in models/gfpgan/' },
  detector: {
    match: /retinaface|detection/,
    folder: 'facedetect',
    hint: 'the RetinaFace face detector (detection_Resnet50_Final.pth) in models/facedetect/',
  },
  parser: { match: /parsenet|parsing/, folder: 'facedetect', hint: 'the ParseNet face parser (parsing_parsenet.pth) in models/facedetect/' },
};

export interface FaceRestorerFiles {
  restorerPath: string;
  detectorPath: string;
  parserPath: string;
}

export class FaceRestorerCatalog {
  constructor(private readonly modelsDir: string) {}

  /** Every weight file (.pth / .safetensors) in the face folders, each real folder read once. */
  private files(): string[] {
    const seen = new Set<string>();
    const out: string[] = [];
    for (const folder of FOLDERS) {
      const dir = join(this.modelsDir, folder);
      if (!existsSync(dir)) continue;
      const real = realpathSync(dir);
      if (seen.has(real)) continue; // a case-insensitive disk: Codeformer/ is codeformer/
      seen.add(real);
      for (const f of readdirSync(dir).sort()) {
        const p = join(dir, f);
        if (!f.startsWith('.') && ['.pth', '.safetensors'].includes(extname(f).toLowerCase()) && statSync(p).isFile() && statSync(p).size > 0) out.push(p);
      }
    }
    return out;
  }

  /** The file for a role: .safetensors before .pth, then the last by name (GFPGANv1.4 over v1.3). */
  private find(role: Role, files = this.files()): string | undefined {
    const hits = files.filter((p) => ROLES[role].match.test(p.slice(p.lastIndexOf('/') + 1).toLowerCase()));
    const rank = (p: string) => (p.toLowerCase().endsWith('.safetensors') ? 1 : 0);
    return hits.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b)).at(-1);
  }

  /** The restorers whose three files are all present. */
  available(): FaceRestorerName[] {
    const files = this.files();
    const helpers = this.find('detector', files) && this.find('parser', files);
    return helpers ? FACE_RESTORERS.filter((m) => this.find(m, files)) : [];
  }

  /** A1111's /sdapi/v1/face-restorers rows: every restorer, with the models folder it is read from (relative). */
  list(): Array<{ name: FaceRestorerName; cmd_dir: string }> {
    const files = this.files();
    return FACE_RESTORERS.map((name) => {
      const found = this.find(name, files);
      return { name, cmd_dir: found ? relative(this.modelsDir, join(found, '..')) : ROLES[name].folder };
    });
  }

  /** The three files of a restorer; throws SpecError(field) naming each missing file and where to put it. */
  resolve(model: FaceRestorerName, field = 'restore_faces'): FaceRestorerFiles {
    if (!FACE_RESTORERS.includes(model)) throw new SpecError(field, `unknown face restorer "${model}"; choose one of: ${FACE_RESTORERS.join(', ')}`);
    const files = this.files();
    const restorerPath = this.find(model, files);
    const detectorPath = this.find('detector', files);
    const parserPath = this.find('parser', files);
    if (restorerPath && detectorPath && parserPath) return { restorerPath, detectorPath, parserPath };
    const missing = (
      [
        [model, restorerPath],
        ['detector', detectorPath],
        ['parser', parserPath],
      ] as const
    ).flatMap(([role, path]) => (path ? [] : [ROLES[role].hint]));
    throw new SpecError(
      field,
      `face restoration with ${model} needs files that are not installed: put ${missing.join('; and ')} (A1111's models/Codeformer/ and models/GFPGAN/ folders are read too)`,
    );
  }
}
