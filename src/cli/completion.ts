import type { Command, Option } from 'commander'
import { XenosError } from '../core/index.ts'

/**
 * Shell completion from the program itself, as kubectl and cobra do it: the shell's function
 * asks `xenos __complete WORDS…` (the command line so far, the last word the one being typed)
 * and offers what it prints, a word a line; nothing printed means a file name. So completion
 * always knows the commands and options of the xenos it calls.
 */
export const COMPLETE_COMMAND = '__complete'

/** The words that may stand where the last of `words` is being typed. */
export function completions (program: Command, words: string[]): string[] {
  const current = words.at(-1) ?? ''
  let cmd = program
  let options = [...program.options]
  let wantsValue = false
  for (const word of words.slice(0, -1)) {
    if (wantsValue) {
      wantsValue = false
      continue
    }
    if (word.startsWith('-')) {
      const option = options.find(o => o.long === word.split('=')[0] || o.short === word)
      wantsValue = option !== undefined && (option.required || option.optional) && !word.includes('=')
      continue
    }
    const sub = cmd.commands.find(c => c.name() === word || c.aliases().includes(word))
    if (sub !== undefined) {
      cmd = sub
      options = [...options, ...sub.options]
    }
  }
  // After an option that takes a value: its choices, or nothing (the shell offers files).
  if (wantsValue) {
    const option = options.find(o => o.long === words.at(-2)?.split('=')[0] || o.short === words.at(-2))
    return (option?.argChoices ?? []).filter(c => c.startsWith(current))
  }
  if (current.startsWith('-')) return [...new Set(options.flatMap(namesOf))].filter(n => n.startsWith(current)).sort()
  return cmd.commands.map(c => c.name()).filter(n => n.startsWith(current)).sort()
}

function namesOf (o: Option): string[] {
  return [o.long, o.short].filter((n): n is string => n !== undefined)
}

/** The function that `source <(xenos completion bash)` (or zsh) defines for `name`. */
export function completionScript (shell: string, name: string): string {
  if (shell === 'bash') {
    return `# bash completion for ${name}: source <(${name} completion bash), e.g. in ~/.bashrc
_${name}_complete() {
  local IFS=$'\\n'
  COMPREPLY=($("\${COMP_WORDS[0]}" ${COMPLETE_COMMAND} "\${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
  if [[ \${#COMPREPLY[@]} -eq 0 ]]; then compopt -o default 2>/dev/null; fi
}
complete -F _${name}_complete ${name}
`
  }
  if (shell === 'zsh') {
    return `#compdef ${name}
# zsh completion for ${name}: source <(${name} completion zsh), e.g. in ~/.zshrc (after compinit)
_${name}_complete() {
  local -a candidates
  candidates=("\${(@f)$("\${words[1]}" ${COMPLETE_COMMAND} "\${(@)words[2,CURRENT]}" 2>/dev/null)}")
  if [[ -n "\${candidates[1]}" ]]; then compadd -- "\${candidates[@]}"; else _files; fi
}
compdef _${name}_complete ${name}
`
  }
  throw new XenosError('INVALID_ARGUMENT', `no completion for shell "${shell}": give bash or zsh`)
}
