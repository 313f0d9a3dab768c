//! `zoo sweep SWEEP.toml --slurm`: an sbatch job-array script with one array task per run.
//!
//! Task I runs `zoo sweep SWEEP.toml --out SWEEP_DIR --only I` from the folder the script was
//! written in (relative task paths resolve there, as locally), so the runs land in the one
//! shared sweep folder and `zoo sweep SWEEP.toml --collect` gathers them. Finished runs make their
//! task exit at once, so resubmitting the script continues a sweep. Every path is absolute and
//! shell-quoted; `RAYON_NUM_THREADS` follows the CPUs Slurm granted. The script is written, not
//! submitted.

use std::path::Path;

use crate::spec::SlurmSpec;

/// What the script needs to know.
pub struct ScriptInput<'a> {
    pub job_name: &'a str,
    pub runs: usize,
    pub zoo_exe: &'a Path,
    pub sweep_file: &'a Path,
    pub sweep_dir: &'a Path,
    pub workdir: &'a Path,
    /// `--device` for every task, when given.
    pub device: Option<&'a str>,
    pub slurm: &'a SlurmSpec,
}

/// The file name inside the sweep folder.
pub const SCRIPT_FILE: &str = "slurm.sbatch";

/// `text` as one single-quoted shell word.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The script's text.
pub fn script(input: &ScriptInput) -> String {
    let s = input.slurm;
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("#SBATCH --job-name={}", input.job_name),
        format!(
            "#SBATCH --array=0-{}{}",
            input.runs.saturating_sub(1),
            s.max_parallel.map(|m| format!("%{m}")).unwrap_or_default()
        ),
        // Slurm expands %A (job) and %a (array index) in this path; it must not be quoted.
        format!(
            "#SBATCH --output={}/logs/slurm-%A_%a.out",
            input.sweep_dir.display()
        ),
    ];
    if let Some(c) = s.cpus_per_task {
        lines.push(format!("#SBATCH --cpus-per-task={c}"));
    }
    if let Some(p) = &s.partition {
        lines.push(format!("#SBATCH --partition={p}"));
    }
    if let Some(t) = &s.time {
        lines.push(format!("#SBATCH --time={t}"));
    }
    if let Some(m) = &s.mem {
        lines.push(format!("#SBATCH --mem={m}"));
    }
    lines.extend(s.options.iter().map(|o| format!("#SBATCH {}", o.trim())));
    lines.push(String::new());
    lines.push(format!(
        "# {} runs of sweep {}; written by `zoo sweep --slurm`. Submit with: sbatch {}",
        input.runs,
        input.job_name,
        shell_quote(&input.sweep_dir.join(SCRIPT_FILE).display().to_string())
    ));
    lines.push("set -euo pipefail".into());
    lines.extend(s.setup.iter().cloned());
    lines.push(format!(
        "cd {}",
        shell_quote(&input.workdir.display().to_string())
    ));
    lines.push(
        "export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-${RAYON_NUM_THREADS:-$(nproc)}}\""
            .into(),
    );
    let device = input
        .device
        .map(|d| format!(" --device {}", shell_quote(d)))
        .unwrap_or_default();
    lines.push(format!(
        "exec {} sweep {} --out {} --only \"$SLURM_ARRAY_TASK_ID\"{device}",
        shell_quote(&input.zoo_exe.display().to_string()),
        shell_quote(&input.sweep_file.display().to_string()),
        shell_quote(&input.sweep_dir.display().to_string()),
    ));
    lines.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_has_the_array_and_the_command() {
        let slurm = SlurmSpec {
            partition: Some("gpu".into()),
            cpus_per_task: Some(4),
            max_parallel: Some(2),
            options: vec!["--gres=gpu:1".into()],
            setup: vec!["module load cuda".into()],
            ..SlurmSpec::default()
        };
        let text = script(&ScriptInput {
            job_name: "mqar",
            runs: 12,
            zoo_exe: Path::new("/opt/zoo/bin/zoo"),
            sweep_file: Path::new("/home/me/it's/sweep.toml"),
            sweep_dir: Path::new("/shared/sweeps/mqar"),
            workdir: Path::new("/home/me"),
            device: Some("wgpu"),
            slurm: &slurm,
        });
        for want in [
            "#SBATCH --array=0-11%2\n",
            "#SBATCH --job-name=mqar\n",
            "#SBATCH --output=/shared/sweeps/mqar/logs/slurm-%A_%a.out\n",
            "#SBATCH --cpus-per-task=4\n",
            "#SBATCH --partition=gpu\n",
            "#SBATCH --gres=gpu:1\n",
            "module load cuda\n",
            "cd '/home/me'\n",
            "exec '/opt/zoo/bin/zoo' sweep '/home/me/it'\\''s/sweep.toml' --out '/shared/sweeps/mqar' --only \"$SLURM_ARRAY_TASK_ID\" --device 'wgpu'\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(text.starts_with("#!/bin/bash\n"));
        // #SBATCH lines must all come before the first command.
        let first_command = text.find("set -euo").unwrap();
        assert!(text.rfind("#SBATCH").unwrap() < first_command);
    }
}
